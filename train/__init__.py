"""What one training job is and how it runs on Ray Train."""
