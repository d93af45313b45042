"""PURE: pfSense-style configuration sync policy (what the master sends, what the backup keeps).

`policy.build_payload` / `policy.receive` / `apply.plan`; the XML-RPC over HTTPS transport is
the edge's (`carpsim.runtime.configsync_service`).
"""
