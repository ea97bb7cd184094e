"""The page at ``/``: try every served model in a browser, read its card, watch it run. Plain HTML, CSS and
JavaScript modules in ``static/`` (no build step, nothing fetched from elsewhere), served by ``page.py``; the page
uses only the public API, so it is also a worked example of it."""
