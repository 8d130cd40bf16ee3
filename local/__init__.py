"""Local development: the Google Cloud emulators and the local stack built on them."""
