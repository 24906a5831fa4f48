"""The admin console: server-rendered pages over the admin REST API's own read queries (issue 20, ADR 0018).

``routes`` (login, logout, pages, static files), ``layout`` (the page frame and its security headers), one module
per page (``hosts_page``, ``host_page``, ``versions_page``), ``bar_chart`` (server-rendered SVG), ``markup`` (HTML
with every value escaped). Pages read through ``StubState.reader`` (a read-only connection in a worker thread),
never on the agents' event loop. JavaScript (``static/console.js``) only refreshes what is on the screen; every
page reads the same without it.
"""
