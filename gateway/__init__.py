"""The HTTP shell around `router_core`: config, app factory, LiteLLM forwarding, CLI.

Import `gateway.app.build_app` and `gateway.config.load_settings`; nothing is built at import.
"""
