"""Talking to the API: an async REST client, informers, work queues, leader election."""
