// The installed auth component: its header beside the core's, its target bringing OpenSSL.
#include <mqttbroker/mqttbroker.hpp>
#include <mqttbroker/auth/scram.hpp>

int main() {
  mqttbroker::auth::scram_credentials c;
  return mqttbroker::auth::derive_scram_credentials("pencil", "salt", 1, c) ? 1 : 0;
}
