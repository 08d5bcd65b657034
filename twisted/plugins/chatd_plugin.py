from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd", "chatd.tap", "A chat server speaking JSON lines.", "chatd")
