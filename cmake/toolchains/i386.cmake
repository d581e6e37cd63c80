# Cross build for 32-bit x86 (i386), which an x86-64 kernel runs natively (64-bit integers are 4-byte aligned there):
#   cmake -S . -B build/cross-i386 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/i386.cmake
# needs crossbuild-essential-i386 and libfmt-dev:i386 (scripts/install-deps.sh --cross).
set(MQTTBROKER_CROSS_PROCESSOR i686)
set(MQTTBROKER_CROSS_TRIPLE i686-linux-gnu)
set(MQTTBROKER_CROSS_MULTIARCH i386-linux-gnu)
set(MQTTBROKER_CROSS_EMULATOR "")
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
