"""Hand-written constants of the bot/operator <-> signer contract (the rest is the .proto files).

A request signature covers CONTEXT || body, so a signature made for one purpose (a bot request,
an operator command) can never be presented as the other.
"""

BOT_SIGNING_CONTEXT = b"bulkhead.signer.v1/bot-request\x00"
ADMIN_SIGNING_CONTEXT = b"bulkhead.signer.v1/admin-request\x00"
# An operator's approval of a loosening proposal covers CONTEXT || the proposal's canonical JSON
# bytes, so it can never double as a request signature (and vice versa).
PROPOSAL_SIGNING_CONTEXT = b"bulkhead/proposal/v1\x00"
