"""The HTTP layer: routes, authentication, body parsing, validation and error rendering."""
