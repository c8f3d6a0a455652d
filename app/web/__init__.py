"""The dashboards: Jinja2 pages and the script that draws them from the JSON API."""
