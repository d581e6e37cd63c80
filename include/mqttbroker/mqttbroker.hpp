#ifndef MQTTBROKER_MQTTBROKER_HPP
#define MQTTBROKER_MQTTBROKER_HPP

// The whole public API, and the source of single_include/mqttbroker/mqttbroker.hpp
// (scripts/amalgamate.py). Keep one include per public header, lowest layer first (the layers
// are listed in README.md, "Layout", and enforced by scripts/check_layers.py); after editing,
// rerun scripts/amalgamate.py and commit single_include/.

// level 0
#include <mqttbroker/config.hpp>
#include <mqttbroker/version.hpp>
#include <mqttbroker/error.hpp>

// level 1: codec/, topic/ (no Asio)
#include <mqttbroker/codec.hpp>
#include <mqttbroker/topic/validate.hpp>
#include <mqttbroker/topic/shared.hpp>
#include <mqttbroker/topic/trie.hpp>
#include <mqttbroker/topic/match.hpp>

// level 2: message.hpp
#include <mqttbroker/message.hpp>

// level 3: options.hpp, storage/, locking/, hooks/
#include <mqttbroker/options.hpp>
#include <mqttbroker/storage/memory.hpp>
#include <mqttbroker/locking/none.hpp>
#include <mqttbroker/locking/shared.hpp>
#include <mqttbroker/hooks/hooks.hpp>
#include <mqttbroker/hooks/acl_file.hpp>

// level 4: session/, router/, transport/, clock/
#include <mqttbroker/session/state.hpp>
#include <mqttbroker/router/subscriptions.hpp>
#include <mqttbroker/router/shared.hpp>
#include <mqttbroker/router/retained.hpp>
#include <mqttbroker/transport/tcp.hpp>
#include <mqttbroker/transport/memory.hpp>
#include <mqttbroker/clock/system.hpp>
#include <mqttbroker/clock/manual.hpp>

// level 5: engine/ (the protocol, no I/O)
#include <mqttbroker/engine/write_batch.hpp>
#include <mqttbroker/engine/link.hpp>
#include <mqttbroker/engine/records.hpp>
#include <mqttbroker/engine/core.hpp>
#include <mqttbroker/engine/protocol.hpp>

// level 6: server/ (connections on Asio), client/ (the client side of MQTT)
#include <mqttbroker/server/connection.hpp>
#include <mqttbroker/client/session.hpp>
#include <mqttbroker/client/client.hpp>

// level 7: broker.hpp
#include <mqttbroker/broker.hpp>
#include <mqttbroker/metrics/prometheus.hpp>
#include <mqttbroker/metrics/http.hpp>
#include <mqttbroker/bridge/bridge.hpp>
#include <mqttbroker/bridge/topics.hpp>

#endif  // MQTTBROKER_MQTTBROKER_HPP
