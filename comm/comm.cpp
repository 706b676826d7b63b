// Shared pieces of the communicator implementations.
#include "comm/comm.hpp"
