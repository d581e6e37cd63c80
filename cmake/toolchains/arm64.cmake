# Cross build for 64-bit ARM (arm64):
#   cmake -S . -B build/cross-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/arm64.cmake
# needs crossbuild-essential-arm64 and libfmt-dev:arm64 (scripts/install-deps.sh --cross).
set(MQTTBROKER_CROSS_PROCESSOR aarch64)
set(MQTTBROKER_CROSS_TRIPLE aarch64-linux-gnu)
set(MQTTBROKER_CROSS_MULTIARCH aarch64-linux-gnu)
set(MQTTBROKER_CROSS_EMULATOR "qemu-aarch64")
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
