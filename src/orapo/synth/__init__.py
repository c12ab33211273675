"""The embedded synthetic chest X-ray world (images, reports, gold labels)."""
