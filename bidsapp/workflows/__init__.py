"""nipype workflows."""
