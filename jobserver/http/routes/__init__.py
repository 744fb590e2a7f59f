"""The API's handlers, a module a resource; app.py holds the route table."""
