#ifndef MQTTBROKER_STORAGE_MEMORY_HPP
#define MQTTBROKER_STORAGE_MEMORY_HPP

#include <mqttbroker/config.hpp>

MQTTBROKER_BEGIN_NAMESPACE
namespace storage {

/// The default storage: sessions and retained messages live only in the broker's own indexes and
/// end with the process. A durable backend sets `durable = true` and receives snapshots; with
/// this one those calls are compiled out.
struct memory {
  static constexpr bool durable = false;
};

}  // namespace storage
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_STORAGE_MEMORY_HPP
