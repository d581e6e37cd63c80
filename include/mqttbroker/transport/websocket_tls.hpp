#ifndef MQTTBROKER_TRANSPORT_WEBSOCKET_TLS_HPP
#define MQTTBROKER_TRANSPORT_WEBSOCKET_TLS_HPP

// WebSocket over TLS (wss://), for a host that links both mqttbroker::websocket and
// mqttbroker::tls. Its listen_options are the TLS listener's (certificates, client certificates,
// versions) and the WebSocket ones (path, origins).

#include <mqttbroker/config.hpp>
#include <mqttbroker/transport/tls.hpp>
#include <mqttbroker/transport/websocket.hpp>

MQTTBROKER_BEGIN_NAMESPACE
namespace transport {

/// WebSocket over TLS: `wss://host:8081/mqtt`.
using wss = websocket_transport<tls>;

}  // namespace transport
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_TRANSPORT_WEBSOCKET_TLS_HPP
