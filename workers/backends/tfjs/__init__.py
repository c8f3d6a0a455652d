"""`tfjs-*`: TF.js in headless Chromium."""
