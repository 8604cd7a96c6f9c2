"""A sample turned into model input: skeleton transforms, augmentation, channels, frame sampling."""
