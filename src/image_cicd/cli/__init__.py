"""The `image-cicd` command line."""
