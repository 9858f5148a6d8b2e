"""vumi_like: a messaging gateway of small workers exchanging vumi envelopes over RabbitMQ."""

__version__ = "0.1.0"
