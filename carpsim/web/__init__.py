"""The pfSense status pages in a browser: plain HTML/CSS/JS, live over server-sent events.

`lab_app` serves both nodes of a running lab side by side (with Force Off / Power On and a live
`unsinkable` run); `node_app` serves one node's own status from inside ``carpsim node``.
"""
