from m3_ros.sync import NearestTimeSync


def test_pairs_nearest_within_slop_and_drops_unmatched():
    out = []
    sync = NearestTimeSync(
        ["pose"], lambda t, img, pose: out.append((t, img, pose)), slop=0.03, queue_size=64
    )
    for k in range(0, 50):  # poses at 100 Hz, from t=0.00
        sync.add("pose", k * 0.01, f"p{k}")
    sync.add_primary(0.104, "img1")  # nearest pose 0.10
    sync.add_primary(0.207, "img2")  # nearest 0.21
    assert out == [(0.104, "img1", "p10"), (0.207, "img2", "p21")]
    sync.add_primary(0.9, "late")  # no pose near 0.9 yet -> waits
    assert len(out) == 2
    sync.add("pose", 1.5, "p150")  # settles: nearest is 0.49 / 1.5, both beyond slop -> dropped
    assert len(out) == 2 and sync.dropped == 1


def test_waits_for_a_closer_message_then_times_out():
    out = []
    sync = NearestTimeSync(
        ["depth", "info"], lambda t, *m: out.append((t, *m)), slop=0.05, max_delay=0.5
    )
    sync.add("info", 0.0, "i0")
    sync.add("depth", 0.0, "d0")
    sync.add_primary(0.02, "img")  # depth/info not yet at/after 0.02: wait
    assert out == []
    sync.add("depth", 0.03, "d1")  # depth settled (0.03 closer than 0.0)
    sync.add_primary(0.6, "img2")  # now img is older than max_delay: decided with what exists
    assert out == [(0.02, "img", "d1", "i0")]


def test_out_of_order_secondaries_are_sorted():
    out = []
    sync = NearestTimeSync(["pose"], lambda t, img, pose: out.append(pose), slop=0.02)
    sync.add("pose", 0.30, "b")
    sync.add("pose", 0.10, "a")
    sync.add_primary(0.11, "img")
    assert out == ["a"]


def test_overflowing_images_are_counted_as_dropped():
    out = []
    sync = NearestTimeSync(["pose"], lambda t, img, pose: out.append(img), queue_size=3)
    for k in range(5):  # no pose yet: images wait, the two oldest fall out
        sync.add_primary(0.01 * k, f"img{k}")
    assert sync.dropped == 2
    sync.add("pose", 0.04, "p")  # settles the three left, all within slop of p
    assert out == ["img2", "img3", "img4"]
