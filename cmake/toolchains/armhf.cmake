# Cross build for 32-bit ARM (armhf), as most older gateways:
#   cmake -S . -B build/cross-armhf -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/armhf.cmake
# needs crossbuild-essential-armhf and libfmt-dev:armhf (scripts/install-deps.sh --cross).
set(MQTTBROKER_CROSS_PROCESSOR arm)
set(MQTTBROKER_CROSS_TRIPLE arm-linux-gnueabihf)
set(MQTTBROKER_CROSS_MULTIARCH arm-linux-gnueabihf)
set(MQTTBROKER_CROSS_EMULATOR "qemu-arm")
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
# GCC notes every std::vector iterator passed by value that GCC 7.1 passed differently on ARM: an
# ABI change for linking with code built before 2017, which none of ours is.
string(APPEND CMAKE_CXX_FLAGS_INIT " -Wno-psabi")
