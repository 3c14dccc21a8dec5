"""Long-lived clients of one running operator, keyed by address and reused across passes.

Created at startup, closed at cleanup, handed to handlers through Kopf's memo: no module globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import OperatorConfig
from .heartbeats import HeartbeatReader
from .k8s import Kube
from .kafka_topics import TopicManager
from .metrics import OperatorMetrics
from .scaling.kafka_lag import LagReader


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube = field(default_factory=Kube)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    _topics: dict[str, TopicManager] = field(default_factory=dict)
    _lag: dict[str, LagReader] = field(default_factory=dict)
    _heartbeats: dict[str, HeartbeatReader] = field(default_factory=dict)

    def topics(self, bootstrap: str) -> TopicManager:
        if bootstrap not in self._topics:
            self._topics[bootstrap] = TopicManager(bootstrap)
        return self._topics[bootstrap]

    def lag(self, bootstrap: str) -> LagReader:
        if bootstrap not in self._lag:
            self._lag[bootstrap] = LagReader(bootstrap)
        return self._lag[bootstrap]

    def heartbeats(self, url: str) -> HeartbeatReader:
        if url not in self._heartbeats:
            self._heartbeats[url] = HeartbeatReader(url)
        return self._heartbeats[url]

    async def close(self) -> None:
        closers = [c.close for c in self._topics.values()]
        closers += [c.close for c in self._lag.values()]
        closers += [c.close for c in self._heartbeats.values()]
        for close in closers:
            try:
                await close()
            except Exception:  # closing is best effort at shutdown
                pass
        await self.kube.close()
