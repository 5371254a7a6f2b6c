"""The provider kit: what a Python SMS provider app needs against this server or a Bitrix24 portal.

    call = parse_handler_call(await request.body())        # MalformedCall -> answer 400
    verify_application_token(call, saved_application_token)  # ForeignCall -> answer 403
    ...answer 200 at once, then, when the carrier says so:
    await report_status(call, DeliveryStatus.DELIVERED)      # BitrixError carries error / error_description

and on ONAPPINSTALL: `event = parse_app_event(body)`, save `event.auth.application_token`,
`await register_sender(event.auth, SenderSpec(...))`. For tests, the pytest plugin
`messageservice.provider.testing` offers a throwaway server as the `messageservice_server` fixture.
"""

from messageservice.provider.calls import (
    ONAPPINSTALL,
    ONAPPUNINSTALL,
    ONAPPUPDATE,
    AppEvent,
    Auth,
    Binding,
    HandlerCall,
    parse_app_event,
    parse_handler_call,
)
from messageservice.provider.errors import (
    BitrixError,
    ForeignCall,
    MalformedCall,
    MissingAuth,
    PortalUnreachable,
    ProviderError,
)
from messageservice.provider.rest import RestClient, SyncRestClient
from messageservice.provider.senders import Registration, SenderSpec, register_sender, register_sender_sync
from messageservice.provider.status import DeliveryStatus, StatusReporter, report_status, report_status_sync
from messageservice.provider.verify import application_token_matches, verify_application_token

__all__ = [
    "ONAPPINSTALL",
    "ONAPPUNINSTALL",
    "ONAPPUPDATE",
    "AppEvent",
    "Auth",
    "Binding",
    "BitrixError",
    "DeliveryStatus",
    "ForeignCall",
    "HandlerCall",
    "MalformedCall",
    "MissingAuth",
    "PortalUnreachable",
    "ProviderError",
    "Registration",
    "RestClient",
    "SenderSpec",
    "StatusReporter",
    "SyncRestClient",
    "application_token_matches",
    "parse_app_event",
    "parse_handler_call",
    "register_sender",
    "register_sender_sync",
    "report_status",
    "report_status_sync",
    "verify_application_token",
]
