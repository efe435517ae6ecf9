"""The pydantic config every wire model shares.

`ser_json_inf_nan="constants"`: a non-finite float serializes as `NaN`/`Infinity` (not as a
silent `null`), so the codec's fast encoder can see it and refuse the frame as the strict
JSON encoder does. It must be set on every model, nested ones included: pydantic applies
each model's own config to its fields.
"""

from pydantic import ConfigDict

WIRE = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")
