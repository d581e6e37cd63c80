// Two translation units that both include the umbrella header must link into one program: every
// function defined in a header is inline and every header object has a single definition.
#include <mqttbroker/mqttbroker.hpp>

const std::error_category* link_a_codec_category() { return &mqttbroker::codec_category(); }
const std::error_category* link_a_protocol_category() { return &mqttbroker::protocol_category(); }
