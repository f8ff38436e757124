// Command herald is the Herald real-time channel server and its commands:
// serve, config check, publish, subscribe, token, grant, ban, disconnect,
// webhooks, bench and version.
//
// It holds flags and thin subcommands, no logic of its own: serve and
// config check call internal/app, the client commands package client
// (webhooks takes the API's shapes from package webhooks), bench
// internal/bench, and what they share beyond flags is internal/cli.
package main
