"""One small conv net for scikit-learn's digits, defined once per framework.

Every exporter, server, client and test imports the model, its tensor names and the
payload codec from here; nothing else redefines them.
"""
