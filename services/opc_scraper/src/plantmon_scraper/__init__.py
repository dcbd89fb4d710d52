"""plantmon's OPC UA scraper: subscribe to every tag below ``Objects/Plant`` and COPY the samples into the database.

Layers: :class:`~plantmon_scraper.settings.ScraperSettings` -> the shared
:class:`~plantmon_common.opcua.PlantSubscriber` (browse, subscribe, reconnect) -> the
:class:`~plantmon_scraper.store.SampleStore` (tag registry, bounded queue, batched binary COPY
with retry) -> :class:`~plantmon_scraper.service.Scraper` (lifecycle, ``/health``, ``/metrics``).
"""

from plantmon_scraper.service import Scraper, run
from plantmon_scraper.settings import ScraperSettings

__all__ = ["Scraper", "ScraperSettings", "run"]
