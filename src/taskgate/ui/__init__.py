"""The dashboard's files (``static/``), served by ``api.routes.ui``."""
