"""Runs singer-io's tap-hubspot (the `contacts` stream, every property selected) against a
HubSpot-compatible origin, for benches/e2e.rs part 3 (see benches/tap-hubspot.sh).

Environment: TAP_BASE_URL (the simulator's origin), TAP_TOKEN (a private-app token).
The tap's Singer messages go to stdout, as they would to a target.
"""
import os

import tap_hubspot as tap
from singer import metadata

tap.BASE_URL = os.environ["TAP_BASE_URL"]
tap.CONFIG.update(
    {
        "api_key": os.environ["TAP_TOKEN"],
        "start_date": "2000-01-01T00:00:00Z",
        "select_fields_by_default": True,
    }
)

# The portal has no custom objects; the tap would list their schemas (/crm/v3/schemas) first.
tap.generate_custom_streams = lambda mode, catalog=None: []

schema = tap.load_schema("contacts")
mdata = metadata.to_map(
    metadata.get_standard_metadata(
        schema=schema,
        key_properties=["id"],
        valid_replication_keys=["updatedAt"],
        replication_method="INCREMENTAL",
    )
)
for breadcrumb in mdata:
    mdata[breadcrumb]["selected"] = True
catalog = {
    "streams": [
        {
            "tap_stream_id": "contacts",
            "stream": "contacts",
            "key_properties": ["id"],
            "schema": schema,
            "metadata": metadata.to_list(mdata),
        }
    ]
}
tap.do_sync({}, catalog)
