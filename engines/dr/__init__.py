"""Disaster recovery: standbys, lag against RPO, fenced failover, switchover, rejoin and drills.

Import the pieces from their modules (``engines.dr.failover`` ...); this package imports nothing heavy.
"""

from engines.dr.models import DisasterRecoverySection, DRConfiguration, DRStrategy

__all__ = ["DRConfiguration", "DRStrategy", "DisasterRecoverySection"]
