#ifndef MQTTBROKER_CODEC_HPP
#define MQTTBROKER_CODEC_HPP

// The MQTT 3.1.1 and 5.0 wire format: packets, properties, incremental decoder, encoder.
#include <mqttbroker/codec/decoder.hpp>
#include <mqttbroker/codec/encoder.hpp>
#include <mqttbroker/codec/packets.hpp>
#include <mqttbroker/codec/properties.hpp>
#include <mqttbroker/codec/types.hpp>
#include <mqttbroker/codec/utf8.hpp>

#endif  // MQTTBROKER_CODEC_HPP
