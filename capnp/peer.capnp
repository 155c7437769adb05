@0xdaa3d783a7473d8a;
# keel's peer protocol: what members send each other over TCP (cluster/transport). Kept apart
# from the client API (keel.capnp). Every frame on the wire is a little-endian u32 length
# followed by one (unpacked) Cap'n Proto message whose root is `Frame`.
#
# A connection is one-way for Raft traffic: the dialling member sends `hello`, the accepting
# member answers `helloReply`, then only the dialler sends `batch` frames. The reverse
# direction is reserved (the SnapshotChunkAck frame, see below; unused today).
# Field meanings are those of cluster/raft/types.hpp.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("keel::peer");

const magic :UInt64 = 0x6b65656c70656572;  # "keelpeer"
const version :UInt32 = 1;

struct Hello {
  magic @0 :UInt64;
  version @1 :UInt32;
  clusterId @2 :UInt64;
  from @3 :UInt64;      # the dialling member
  to @4 :UInt64;        # the member it means to reach
}

struct HelloReply {
  accepted @0 :Bool;
  reason @1 :Text;      # why not, when refused
  clusterId @2 :UInt64;
  node @3 :UInt64;      # the accepting member
}

enum EntryType {
  normal @0;
  confChange @1;
}

struct Entry {
  index @0 :UInt64;
  term @1 :UInt64;
  type @2 :EntryType;
  data @3 :Data;
}

struct SnapshotMeta {
  index @0 :UInt64;
  term @1 :UInt64;
  voters @2 :List(UInt64);
  learners @3 :List(UInt64);
}

struct Snapshot {
  meta @0 :SnapshotMeta;
  data @1 :Data;        # empty: the state is streamed separately (see below)
}

enum MessageType {
  app @0;
  appResp @1;
  vote @2;
  voteResp @3;
  preVote @4;
  preVoteResp @5;
  heartbeat @6;
  heartbeatResp @7;
  snap @8;
  prop @9;
  readIndex @10;
  readIndexResp @11;
  transferLeader @12;
  timeoutNow @13;
}

struct Message {
  type @0 :MessageType;
  from @1 :UInt64;
  to @2 :UInt64;
  term @3 :UInt64;
  logTerm @4 :UInt64;
  index @5 :UInt64;
  commit @6 :UInt64;
  rejectHint @7 :UInt64;
  reject @8 :Bool;
  transfer @9 :Bool;
  entries @10 :List(Entry);
  snapshot @11 :Snapshot;   # set iff type == snap
  context @12 :Data;
}

struct AppMessage {
  payload @0 :Data;         # opaque to the transport
}

struct Item {
  union {
    raft @0 :Message;
    app @1 :AppMessage;
  }
}

# Everything queued for one peer when the connection was free to write, in send order.
struct Batch {
  items @0 :List(Item);
}

# Snapshots are streamed as AppMessages (cluster/node/wire.hpp: chunks, each acknowledged by
# an AppMessage back over the receiver's own connection); the `snap` Message carries only the
# metadata and follows the last acknowledged chunk. These two frame kinds are reserved
# (decoded and fuzzed, never sent): a later transfer on a second connection may use them.
struct SnapshotChunk {
  transferId @0 :UInt64;
  offset @1 :UInt64;
  data @2 :Data;
  last @3 :Bool;
}

struct SnapshotChunkAck {
  transferId @0 :UInt64;
  offset @1 :UInt64;        # bytes stored so far
  ok @2 :Bool;
}

struct Frame {
  union {
    hello @0 :Hello;
    helloReply @1 :HelloReply;
    batch @2 :Batch;
    snapshotChunk @3 :SnapshotChunk;
    snapshotChunkAck @4 :SnapshotChunkAck;
  }
}
