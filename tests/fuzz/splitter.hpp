// Chunk sizes for the fuzz targets, so that every input is also fed in pieces: whole, byte by
// byte, or xorshift-driven sizes of 1 to `limit`, all chosen by one control byte of the input.
#ifndef MQTTBROKER_TESTS_FUZZ_SPLITTER_HPP
#define MQTTBROKER_TESTS_FUZZ_SPLITTER_HPP

#include <cstddef>
#include <cstdint>

namespace fuzz {

class splitter {
 public:
  splitter(std::uint8_t control, std::uint32_t limit) : mode_(control & 3u), limit_(limit), state_(control | 0x100u) {}

  /// The next chunk's size, at most `remaining`.
  std::size_t next(std::size_t remaining) {
    std::size_t n = remaining;
    if (mode_ == 1) {
      n = 1;
    } else if (mode_ >= 2) {
      state_ ^= state_ << 13;
      state_ ^= state_ >> 17;
      state_ ^= state_ << 5;
      n = 1 + state_ % limit_;
    }
    return n < remaining ? n : remaining;
  }

 private:
  unsigned mode_;
  std::uint32_t limit_;
  std::uint32_t state_;
};

}  // namespace fuzz

#endif  // MQTTBROKER_TESTS_FUZZ_SPLITTER_HPP
