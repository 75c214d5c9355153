"""pashq-sqs: the Amazon SQS driver for pashq, on plain boto3.

Registered as ``type = "sqs"`` through the ``pashq.drivers`` entry point; see
:mod:`pashq_sqs.driver` for the spec sheet and ``docs/sqs.md`` for the guide.
"""

from __future__ import annotations

from pashq_sqs.driver import Receipt, SQSDriver
from pashq_sqs.errors import IgnoredAttributeWarning
from pashq_sqs.options import SQSOptions

__all__ = ["IgnoredAttributeWarning", "Receipt", "SQSDriver", "SQSOptions"]
