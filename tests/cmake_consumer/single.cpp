// The installed single header, as a consumer includes it: the same include folder as the others.
#include <mqttbroker/single/mqttbroker.hpp>

#ifndef MQTTBROKER_SINGLE_HEADER
#error "<mqttbroker/single/mqttbroker.hpp> is not the single header"
#endif

int single_header_version() { return MQTTBROKER_VERSION; }
