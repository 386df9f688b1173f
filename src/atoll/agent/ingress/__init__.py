"""The HTTP router each host runs for Ingresses of class ``atoll``."""
