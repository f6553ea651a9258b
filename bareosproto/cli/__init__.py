"""Command-line tools built on the public API of :mod:`bareosproto`.

* ``bareosproto-transcript`` (:mod:`bareosproto.cli.transcript`): decode a
  pcap (or one raw byte stream) of Bareos traffic into frames per TCP
  connection, with the Hello and CRAM-MD5 steps recognised and secrets
  masked; readable text, JSON in the conformance-recording format, or a
  Mermaid sequence diagram.
* ``bareosproto-fuzz`` (:mod:`bareosproto.cli.fuzz`): bounded mutational
  fuzzing of a live daemon's handshake on loopback, with a reproducer per
  finding.

Each module has ``main(argv=None) -> int``.
"""

from __future__ import annotations

__all__: list[str] = []
