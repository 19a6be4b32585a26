"""Code that runs *inside* the sandbox (never imported by the service side except for constants)."""
