"""Plain JSON: a UTF-8 JSON object per message, what most choreographed services publish."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.codecs.base import Decoded, decode_headers, dump_json, parse_json_object, require_value


class JsonCodec:
    """Decodes a JSON object payload; headers pass through as UTF-8 strings."""

    def decode(self, value: bytes | None, headers: Mapping[str, bytes | str]) -> Decoded:
        return Decoded(parse_json_object(require_value(value)), decode_headers(headers))

    def encode(
        self, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        return dump_json(payload), dict(headers)
