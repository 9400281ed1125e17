//! gRPC contracts between agents, controller and console. The .proto files and the generated tonic code arrive with the controller issue; no service is declared yet.
