"""A loopback RTSP server for tests and benchmarks: serves one H.264 MP4 file at its real-time pace.

Run it with the system Python, which has the GStreamer bindings (Debian packages
python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good and -bad):

    /usr/bin/python3 tests/rtsp_server.py --video clip.mp4 --port 0

It binds 127.0.0.1 only, prints `ready rtsp://127.0.0.1:PORT/stream` on stdout once
it accepts connections, and stops on SIGTERM or SIGINT. Every client gets its own
playback from the first frame. A test makes the server stall by sending it SIGSTOP.
Its connections then stay open but carry nothing, and the kernel accepts new
ones that get no reply, as with a camera that hangs.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

MOUNT_PATH = "/stream"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve an H.264 MP4 file over RTSP on 127.0.0.1.")
    parser.add_argument("--video", required=True, help="MP4 file with one H.264 video stream")
    parser.add_argument("--port", type=int, default=0, help="TCP port to listen on; 0 picks a free one (default: 0)")
    return parser.parse_args()


def launch_description(video: str) -> str:
    location = video.replace("\\", "\\\\").replace('"', '\\"')
    # config-interval=-1 repeats SPS and PPS before every key frame, so a client
    # that joins or reconnects can decode from the next key frame on.
    return (f'( filesrc location="{location}" ! qtdemux ! h264parse '
            f"! rtph264pay name=pay0 pt=96 config-interval=-1 )")


def main() -> int:
    args = parse_arguments()
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_description(args.video))
    factory.set_shared(False)
    server.get_mount_points().add_factory(MOUNT_PATH, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"ready rtsp://127.0.0.1:{server.get_bound_port()}{MOUNT_PATH}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
