"""The SavedModel behind the same Flask app, codec and gunicorn config as flask_torch: the
TensorFlow half of the framework x server comparison."""
