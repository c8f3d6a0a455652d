"""What every layer of the service stands on: settings, the database engine, errors."""
