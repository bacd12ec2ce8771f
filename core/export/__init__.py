"""Exports that leave the workstation: DICOM SEG / Secondary Capture, PDF reports; anonymised by default."""
