"""Build steps: the .mar archives, the gRPC stubs and the OpenAPI document (`make archives`, `make stubs`,
`make api`). The runtime (ops/) never imports them; deploy/ uses the archive list."""
