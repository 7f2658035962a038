"""The recorder's MCAP: readable by the standard readers however the recording ends, and a
bag to rosbag tooling (rosbag2's QoS and bag metadata, as rosbags 0.11 decodes them).

* without ROS traffic, through `McapTopicWriter` (the recorder's writer): copies of a
  recording cut at random bytes read up to their last complete chunk; the file after any
  flush (what a SIGKILL leaves) reads whole with every reader, rosbags included; the
  finished file is a bag to rosbags; `recover_mcap` keeps the source's provenance;
* over DDS (loopback, this file's own ROS_DOMAIN_ID): a `roboreal record` process SIGKILLed
  mid-session leaves an MCAP that mcap's readers and rosbags read with no repair step.
"""

from __future__ import annotations

import io
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from roboreal.sim2real.nodes.mcap_writer import MCAP_MAGIC, recover_mcap
from roboreal.sim2real.nodes.ros2_bag import McapTopicWriter, offered_qos_profiles_yaml, qos_profile_dict

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_.*' is deprecated:DeprecationWarning")

INFINITE = {"sec": 9223372036, "nsec": 854775807}  # rmw's RMW_DURATION_INFINITE as rosbag2 writes it


def _graph_qos(reliability: int, durability: int) -> dict:
    """A publisher's QoS as the ROS graph reports it (history unknown, depth 0, infinite durations)."""
    infinite = 2**63 - 1  # ns, as rclpy reports rmw's infinite durations
    return qos_profile_dict(SimpleNamespace(
        history=3, depth=0, reliability=reliability, durability=durability, deadline=infinite, lifespan=infinite,
        liveliness=1, liveliness_lease_duration=infinite, avoid_ros_namespace_conventions=False))


BEST_EFFORT, RELIABLE, TRANSIENT_LOCAL, VOLATILE = 2, 1, 1, 2  # rmw's enum values
TOPICS = {  # topic -> (type, offered QoS)
    "/joint_states": ("sensor_msgs/msg/JointState", _graph_qos(BEST_EFFORT, VOLATILE)),
    "/policy_node/info": ("std_msgs/msg/String", _graph_qos(RELIABLE, TRANSIENT_LOCAL)),
    "/policy_node/step": ("std_msgs/msg/Float64MultiArray", _graph_qos(RELIABLE, VOLATILE)),
}


def _cdr(topic: str, i: int) -> bytes:
    """Message `i` of `topic` as CDR, byte for byte what DDS delivers (rosbags' serializer;
    rclpy's serialize_message pads some types with stray bytes that DDS never sends)."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    T = store.types
    if topic == "/joint_states":
        header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=i, nanosec=0), frame_id="base")
        none = np.zeros(0, dtype=np.float64)
        msg = T["sensor_msgs/msg/JointState"](header=header, name=["a", "b"], position=np.array([0.01 * i, -0.02 * i]),
                                              velocity=none, effort=none)
    elif topic == "/policy_node/info":
        msg = T["std_msgs/msg/String"](data=f'{{"robot": "cartpole", "i": {i}}}')
    else:
        msg = T["std_msgs/msg/Float64MultiArray"](layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                                                  data=np.array([float(i), 0.5 * i, -1.0]))
    return bytes(store.serialize_cdr(msg, TOPICS[topic][0]))


def write_session(path: Path, n: int = 240, chunk_size: int = 1024, flush_every: int = 37,
                  on_commit=None) -> list[tuple[str, int, bytes]]:
    """A recording through the recorder's writer: `n` messages over three topics (the info topic
    registered late, mid-session, as discovery does), a metadata record, periodic flushes.
    `on_commit(writer)` runs after each flush. Returns [(topic, log time, CDR bytes)] in order."""
    w = McapTopicWriter(path, chunk_size=chunk_size, ros_distro="testdistro")
    for topic, type_hash in (("/joint_states", "RIHS01_js"), ("/policy_node/step", "")):
        w.add_topic(topic, TOPICS[topic][0], [TOPICS[topic][1]], type_hash=type_hash)
    written = []
    for i in range(n):
        if i == n // 3:
            w.add_topic("/policy_node/info", TOPICS["/policy_node/info"][0], [TOPICS["/policy_node/info"][1]])
            w.add_metadata("roboreal.policy_node_info", {"json": '{"robot": "cartpole"}'})
        topic = ("/joint_states", "/policy_node/step", "/policy_node/info")[i % (3 if i >= n // 3 else 2)]
        data = _cdr(topic, i)
        w.write(topic, data, 1_000_000_000 + 1_000_000 * i, 1_000_000_000 + 1_000_000 * i - 500)
        written.append((topic, 1_000_000_000 + 1_000_000 * i, data))
        if (i + 1) % flush_every == 0:
            w.flush()
            if on_commit:
                on_commit(w)
    w.finish()
    return written


def stream_read(data: bytes, reader: str = "stream") -> tuple[list[tuple[str, int, bytes]], Exception | None]:
    """Messages a streaming reader yields from `data` before it stops, and the error it stopped
    with (None: it reached the end). stream: `StreamReader`; nonseeking: `make_reader` on a
    non-seekable stream, in file order."""
    from mcap.reader import NonSeekingReader, make_reader
    from mcap.records import Channel, Message
    from mcap.stream_reader import StreamReader

    out: list[tuple[str, int, bytes]] = []
    try:
        if reader == "stream":
            channels = {}
            for rec in StreamReader(io.BytesIO(data), validate_crcs=True).records:
                if isinstance(rec, Channel):
                    channels[rec.id] = rec.topic
                elif isinstance(rec, Message):
                    out.append((channels[rec.channel_id], rec.log_time, rec.data))
        else:
            class Pipe(io.BytesIO):
                def seekable(self) -> bool:
                    return False

            r = make_reader(Pipe(data), validate_crcs=True)
            assert isinstance(r, NonSeekingReader)
            for _, channel, msg in r.iter_messages(log_time_order=False):
                out.append((channel.topic, msg.log_time, msg.data))
    except Exception as e:  # noqa: BLE001  the tear
        return out, e
    return out, None


def chunk_ends(path: Path) -> list[tuple[int, int]]:
    """[(end offset of a chunk record, messages in it)] of a finished file, from its chunk index
    and each chunk's content."""
    from mcap.data_stream import ReadDataStream
    from mcap.reader import make_reader
    from mcap.records import Chunk, Message
    from mcap.stream_reader import breakup_chunk

    out = []
    with open(path, "rb") as f:
        for ci in make_reader(f).get_summary().chunk_indexes:
            f.seek(ci.chunk_start_offset + 9)
            chunk = Chunk.read(ReadDataStream(f))
            out.append((ci.chunk_start_offset + ci.chunk_length,
                        sum(isinstance(r, Message) for r in breakup_chunk(chunk, validate_crc=True))))
    return out


# ----------------------------------------------------------------------------------------
# Without ROS traffic
# ----------------------------------------------------------------------------------------
def test_a_copy_cut_at_any_byte_reads_up_to_its_last_complete_chunk(tmp_path):
    """Cut at 400 random bytes (and at every chunk's edges, and all through the header): the
    streaming readers yield exactly the messages of the chunks complete before the cut, in
    order, then stop with an mcap/struct error at the tear; the count never falls as the cut
    moves later."""
    from mcap.exceptions import McapError

    path = tmp_path / "session.mcap"
    written = write_session(path)
    full = path.read_bytes()
    ends = chunk_ends(path)
    assert len(ends) >= 20 and sum(n for _, n in ends) == len(written)  # many chunks, every message in one
    header_end = 8 + 9 + struct.unpack("<Q", full[9:17])[0]  # magic, then the header record
    rng = np.random.default_rng(20240518)
    cuts = {int(c) for c in rng.integers(0, len(full), 400)} | set(range(0, header_end + 24))
    cuts |= {e + d for e, _ in ends for d in (-1, 0, 1)}
    previous = -1
    for cut in sorted(c for c in cuts if 0 <= c < len(full)):
        expected = sum(n for end, n in ends if end <= cut)
        for reader in ("stream", "nonseeking") if cut % 4 == 0 or cut in {e for e, _ in ends} else ("stream",):
            got, err = stream_read(full[:cut], reader)
            assert got == written[:expected], (cut, reader, len(got), expected)
            assert isinstance(err, (McapError, struct.error)), (cut, reader, repr(err))  # no footer: it stops there
        assert expected >= previous
        previous = expected
    assert stream_read(full) == (written, None) and stream_read(full, "nonseeking") == (written, None)


def test_the_file_after_any_flush_is_a_complete_mcap_every_reader_reads(tmp_path):
    """What a SIGKILL leaves between two writes: after every flush the file ends with a Data End,
    a Footer without a summary and the magic, so mcap's stream, non-seeking and seeking
    readers and rosbags read all of it, no error and no repair; unflushed messages are not
    there; schemas and channels precede the first chunk that uses them."""
    from mcap.reader import make_reader
    from mcap.records import Channel, Chunk, DataEnd, Footer, Header, Metadata, Schema
    from mcap.stream_reader import StreamReader
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import QosDurability, QosReliability

    snapshots: list[tuple[bytes, int]] = []
    written = write_session(tmp_path / "session.mcap",
                            on_commit=lambda w: snapshots.append(((tmp_path / "session.mcap").read_bytes(),
                                                                  w.file.message_count)))
    assert len(snapshots) == 6
    for k, (data, flushed) in enumerate(snapshots):
        assert data.endswith(MCAP_MAGIC)
        got, err = stream_read(data)
        assert err is None and got == written[:flushed], k
        assert stream_read(data, "nonseeking") == (written[:flushed], None)
        with io.BytesIO(data) as f:
            r = make_reader(f)
            assert r.get_summary() is None  # no index: the seeking reader reads it linearly
            assert [(c.topic, m.log_time, m.data) for _, c, m in r.iter_messages()] == written[:flushed]
            assert [m.name for m in r.iter_metadata()][0] == "rosbag2"
        kinds = [type(rec) for rec in StreamReader(io.BytesIO(data), emit_chunks=True).records]
        assert kinds[0] is Header and kinds[-2:] == [DataEnd, Footer]
        first_chunk = kinds.index(Chunk)
        assert kinds[:first_chunk].count(Channel) == 2 and kinds[:first_chunk].count(Schema) == 2
        if k >= 2:  # after the info topic was added mid-session: its records sit between chunks
            assert kinds.count(Channel) == 3 and Metadata in kinds[first_chunk:]
        killed = tmp_path / f"killed_{k}.mcap"
        killed.write_bytes(data)
        with AnyReader([killed]) as r:  # rosbags scans a file whose footer has no summary
            counts = {c.topic: c.msgcount for c in r.connections}
            assert sum(counts.values()) == flushed
            assert counts["/joint_states"] == sum(t == "/joint_states" for t, _, _ in written[:flushed])
            js = next(c for c in r.connections if c.topic == "/joint_states")
            assert js.ext.offered_qos_profiles[0].reliability == QosReliability.BEST_EFFORT
            if k >= 2:
                info = next(c for c in r.connections if c.topic == "/policy_node/info")
                assert info.ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
            last = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages(connections=[js])][-1]
            i = max(i for i, (t, _, _) in enumerate(written[:flushed]) if t == "/joint_states")
            assert list(last.position) == pytest.approx([0.01 * i, -0.02 * i])


def test_rosbags_reads_the_finished_file_as_a_bag(tmp_path):
    """The finished file: indexed (summary CRC per the spec), rosbags reads topics, types, counts,
    the publishers' QoS and every message; its rosbag2 metadata record, as a bag directory's
    metadata.yaml, makes a rosbag2 bag rosbags opens (version 9, ros_distro, QoS per topic)."""
    from mcap.reader import make_reader
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.rosbag2 import Reader

    bag = tmp_path / "bag"
    bag.mkdir()
    path = bag / "session.mcap"
    written = write_session(path)
    data = path.read_bytes()
    summary_start, summary_offset_start, crc = struct.unpack("<QQI", data[-8 - 20:-8])
    assert crc == zlib.crc32(data[summary_start:len(data) - 8 - 4])  # the summary and the footer up to its CRC
    with open(path, "rb") as f:
        r = make_reader(f, validate_crcs=True)
        summary = r.get_summary()
        assert summary.statistics.message_count == len(written) and len(summary.chunk_indexes) >= 20
        assert [(c.topic, m.log_time, m.data) for _, c, m in r.iter_messages()] == written
        metadata = {m.name: m.metadata for m in r.iter_metadata()}  # the last of each name
        assert r.get_header().library.startswith("roboreal-recorder/")

    with AnyReader([path]) as r:
        conns = {c.topic: c for c in r.connections}
        assert {t: (c.msgtype, c.msgcount) for t, c in conns.items()} == {
            t: (TOPICS[t][0], sum(w == t for w, _, _ in written)) for t in TOPICS}
        js = conns["/joint_states"].ext.offered_qos_profiles
        assert js == [(QosHistory.UNKNOWN, 0, QosReliability.BEST_EFFORT, QosDurability.VOLATILE,
                       QosTime(**INFINITE), QosTime(**INFINITE), QosLiveliness.AUTOMATIC, QosTime(**INFINITE), False)]
        info = conns["/policy_node/info"].ext.offered_qos_profiles[0]
        assert (info.reliability, info.durability) == (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)
        msgs = [(c.topic, t, r.deserialize(raw, c.msgtype)) for c, t, raw in r.messages()]
        assert [(topic, t) for topic, t, _ in msgs] == [(topic, t) for topic, t, _ in written]
        assert list(msgs[-3][2].position) == pytest.approx([0.01 * (len(written) - 3), -0.02 * (len(written) - 3)])
        assert msgs[1][2].data.tolist() == [1.0, 0.5, -1.0]
        assert msgs[-1][2].data == f'{{"robot": "cartpole", "i": {len(written) - 1}}}'

    bag_meta = yaml.safe_load(metadata["rosbag2"]["serialized_metadata"])
    assert metadata["rosbag2"]["ROS_DISTRO"] == "testdistro" and bag_meta["version"] == 9
    assert bag_meta["message_count"] == len(written)
    assert bag_meta["duration"]["nanoseconds"] == written[-1][1] - written[0][1]
    (bag / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": bag_meta}))
    with Reader(bag) as r:  # rosbags' reader of rosbag2 bag directories, from the metadata alone
        assert r.ros_distro == "testdistro" and r.message_count == len(written)
        topics = {c.topic: c for c in r.connections}
        assert topics["/policy_node/info"].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
        assert topics["/joint_states"].digest == "RIHS01_js" and topics["/joint_states"].msgcount == \
            sum(t == "/joint_states" for t, _, _ in written)
        assert sum(1 for _ in r.messages()) == len(written)


def test_recover_keeps_provenance_and_indexes_a_torn_copy(tmp_path):
    """A copy cut inside a chunk: rosbags needs the file's end (its footer) and refuses it;
    `recover_mcap` rewrites it with every complete chunk's messages, the source's library,
    metadata records and channel metadata, indexed: rosbags and the seeking reader read it.
    A non-MCAP source or an existing destination is an error naming the file."""
    from mcap.reader import make_reader
    from rosbags.highlevel import AnyReader, AnyReaderError

    path = tmp_path / "session.mcap"
    written = write_session(path)
    full = path.read_bytes()
    ends = chunk_ends(path)
    cut = (ends[12][0] + ends[13][0]) // 2  # inside chunk 13
    torn = tmp_path / "torn.mcap"
    torn.write_bytes(full[:cut])
    kept = sum(n for _, n in ends[:13])
    with pytest.raises(AnyReaderError, match="File end magic is invalid"):
        AnyReader([torn]).open()

    res = recover_mcap(torn, tmp_path / "recovered.mcap")
    assert res["messages"] == kept and res["channels"] == 3 and not res["complete"]
    assert res["tear"] and "EndOfFile" in res["tear"]
    with open(path, "rb") as f:
        src = make_reader(f)
        src_meta = [(m.name, m.metadata) for m in src.iter_metadata()]
        src_channels = {c.topic: c.metadata for c in src.get_summary().channels.values()}
        library = src.get_header().library
    with open(tmp_path / "recovered.mcap", "rb") as f:
        r = make_reader(f)
        assert r.get_header().library == f"{library} (recovered by roboreal recover_mcap)"
        assert r.get_header().profile == "ros2"
        assert r.get_summary().statistics.message_count == kept
        assert {c.topic: c.metadata for c in r.get_summary().channels.values()} == src_channels
        assert [(m.name, m.metadata) for m in r.iter_metadata()] == src_meta[:-1]  # all but finish's rosbag2 record
        assert [(c.topic, m.log_time, m.data) for _, c, m in r.iter_messages()] == written[:kept]
    with AnyReader([tmp_path / "recovered.mcap"]) as r:
        assert sum(c.msgcount for c in r.connections) == kept

    complete = recover_mcap(path, tmp_path / "again.mcap")
    assert complete == {"messages": len(written), "channels": 3, "complete": True, "tear": None}
    (tmp_path / "notes.mcap").write_text("not an mcap file at all")
    with pytest.raises(ValueError, match="notes.mcap is not an MCAP file"):
        recover_mcap(tmp_path / "notes.mcap", tmp_path / "x.mcap")
    (tmp_path / "stub.mcap").write_bytes(full[:12])
    with pytest.raises(ValueError, match="stub.mcap is not a readable MCAP file"):
        recover_mcap(tmp_path / "stub.mcap", tmp_path / "y.mcap")
    with pytest.raises(FileExistsError):
        recover_mcap(torn, tmp_path / "recovered.mcap")  # a recording is never overwritten
    cli = subprocess.run([sys.executable, "-m", "roboreal", "record", "--recover", str(tmp_path / "notes.mcap")],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "notes.mcap is not an MCAP file" in cli.stderr


def test_offered_qos_profiles_are_rosbag2_version_9():
    """A publisher's QoS becomes rosbag2's offered_qos_profiles entry: policies by rmw's names,
    durations as sec/nsec (infinite: 9223372036 s 854775807 ns), in rosbag2's key order."""
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, qos_profile_sensor_data

    # a copy: rclpy's qos_profile_sensor_data is one shared object, and a deadline left on it
    # makes every later sensor-data subscription in this process incompatible with its publishers
    q = QoSProfile(history=qos_profile_sensor_data.history, depth=qos_profile_sensor_data.depth,
                   reliability=qos_profile_sensor_data.reliability, durability=qos_profile_sensor_data.durability)
    q.deadline = Duration(seconds=0, nanoseconds=1_500_000_000)
    entry = qos_profile_dict(q)
    assert entry == {"history": "keep_last", "depth": 5, "reliability": "best_effort", "durability": "volatile",
                     "deadline": {"sec": 1, "nsec": 500_000_000}, "lifespan": {"sec": 0, "nsec": 0},
                     "liveliness": "system_default", "liveliness_lease_duration": {"sec": 0, "nsec": 0},
                     "avoid_ros_namespace_conventions": False}
    assert TOPICS["/policy_node/info"][1]["durability"] == "transient_local"
    assert TOPICS["/policy_node/info"][1]["deadline"] == INFINITE
    text = offered_qos_profiles_yaml([TOPICS["/joint_states"][1]])
    assert text.splitlines()[:4] == ["- history: unknown", "  depth: 0", "  reliability: best_effort",
                                     "  durability: volatile"]
    assert yaml.safe_load(text) == [TOPICS["/joint_states"][1]]


# ----------------------------------------------------------------------------------------
# Over DDS
# ----------------------------------------------------------------------------------------
@pytest.mark.ros
@pytest.mark.timeout(90)
def test_a_sigkilled_recorder_leaves_an_mcap_the_standard_readers_read(tmp_path):
    """`roboreal record` subscribed to a latched ~/info, ~/step and a best-effort /joint_states,
    SIGKILLed mid-session: its MCAP reads whole with mcap's stream and seeking readers and with
    rosbags (topics, counts, types, the publishers' QoS, the messages), no repair step; the
    schemas hash to the type hashes the ROS graph reported."""
    from mcap.reader import make_reader
    from mcap.records import Channel, Footer
    from mcap.stream_reader import StreamReader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import QosDurability, QosReliability
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String
    from ros_helpers import Probe, Process, domain_id, ros_env, wait_for
    from test_recorder import ACT, OBS, session_info, step_values

    from roboreal.sim2real.nodes.step_record import StepPacker, info_json

    domain = domain_id(45)
    out = tmp_path / "session.hdf5"
    rec = Process([sys.executable, "-m", "roboreal", "record", "--out", str(out), "--ros-args",
                   "-p", "mcap_flush_period:=0.2", "-p", "extra_topics:=[/joint_states]"], ros_env(domain),
                  stop_timeout=20)
    probe = None
    try:
        probe = Probe(domain, "recorder_test_probe")
        n = probe.node
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        info_pub = n.create_publisher(String, "/policy_node/info", latched)
        step_pub = n.create_publisher(Float64MultiArray, "/policy_node/step", QoSProfile(depth=1000))
        js_pub = n.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        info_pub.publish(String(data=info_json(session_info({"step": "/policy_node/step",
                                                             "info": "/policy_node/info"}))))
        rec.wait_output("session: cartpole", 30)
        rec.wait_output("recording /joint_states", 10)
        wait_for(lambda: step_pub.get_subscription_count() > 0 and js_pub.get_subscription_count() > 0, 10,
                 "the recorder's subscriptions")
        packer = StepPacker(OBS, ACT)
        for s in range(1, 41):
            step_pub.publish(packer.pack(step_values(s)))
            if s % 2 == 0:
                js_pub.publish(JointState(name=["slider", "hinge"], position=[0.01 * s, -0.02 * s]))
            time.sleep(0.005)
        time.sleep(1.0)  # > 4 flush periods: every message is committed
        rec.proc.send_signal(signal.SIGKILL)
        rec.proc.wait(10)
    finally:
        if probe is not None:
            probe.close()
        rec.stop()
    assert rec.proc.returncode == -signal.SIGKILL and "stopped:" not in rec.output

    mcap = out.with_suffix(".mcap")
    with open(mcap, "rb") as f:  # the stream reader reaches the (provisional) footer: no error
        records = list(StreamReader(f, validate_crcs=True).records)
    assert isinstance(records[-1], Footer) and records[-1].summary_start == 0
    channels = {rec.topic: rec for rec in records if isinstance(rec, Channel)}
    with open(mcap, "rb") as f:
        decoded: dict[str, list] = {}
        for _, ch, _, m in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            decoded.setdefault(ch.topic, []).append(m)
    assert len(decoded["/policy_node/step"]) == 40 and len(decoded["/joint_states"]) == 20
    assert list(decoded["/joint_states"][-1].position) == pytest.approx([0.4, -0.8])
    assert "cartpole" in decoded["/policy_node/info"][0].data

    with AnyReader([mcap]) as r:
        conns = {c.topic: c for c in r.connections}
        assert {t: (conns[t].msgtype, conns[t].msgcount) for t in decoded} == {
            "/policy_node/step": ("std_msgs/msg/Float64MultiArray", 40),
            "/joint_states": ("sensor_msgs/msg/JointState", 20), "/policy_node/info": ("std_msgs/msg/String", 1)}
        qos = {t: conns[t].ext.offered_qos_profiles[0] for t in decoded}
        assert (qos["/policy_node/info"].reliability, qos["/policy_node/info"].durability) == \
            (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)
        assert (qos["/joint_states"].reliability, qos["/joint_states"].durability) == \
            (QosReliability.BEST_EFFORT, QosDurability.VOLATILE)
        assert qos["/policy_node/step"].durability == QosDurability.VOLATILE
        steps = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages(connections=[conns["/policy_node/step"]])]
        np.testing.assert_array_equal(steps[-1].data, packer.pack(step_values(40)).data)
        for topic in decoded:  # the ros2msg schemas hash as ROS hashed the types (the graph's RIHS01)
            graph_hash = channels[topic].metadata["topic_type_hash"]
            assert graph_hash.startswith("RIHS01_") and r.typestore.hash_rihs01(conns[topic].msgtype) == graph_hash
