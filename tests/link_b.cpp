#include <mqttbroker/mqttbroker.hpp>

#include <cstdio>

const std::error_category* link_a_codec_category();
const std::error_category* link_a_protocol_category();

int main() {
  int failures = 0;
  // Error codes compare categories by address: both TUs must see the same category object.
  if (link_a_codec_category() != &mqttbroker::codec_category()) {
    std::puts("FAILED: codec_category() differs between translation units");
    ++failures;
  }
  if (link_a_protocol_category() != &mqttbroker::protocol_category()) {
    std::puts("FAILED: protocol_category() differs between translation units");
    ++failures;
  }
  std::printf("link test: %d passed, %d failed\n", 2 - failures, failures);
  return failures == 0 ? 0 : 1;
}
