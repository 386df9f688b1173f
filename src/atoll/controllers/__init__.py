"""Controllers: one module per controller, each a reconcile function over the client kit."""
