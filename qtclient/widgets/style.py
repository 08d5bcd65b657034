"""Colours, icons and the application style sheet, kept in one place so the look is consistent."""

from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap

ACCENT = "#4f46e5"
STATUS_COLOURS = {"online": "#22c55e", "away": "#f59e0b", "offline": "#9ca3af"}
STATE_COLOURS = {
    "online": "#22c55e", "connected": "#9ca3af", "connecting": "#f59e0b",
    "reconnecting": "#f59e0b", "disconnected": "#ef4444",
}

STYLE_SHEET = f"""
QWidget {{ font-size: 10.5pt; }}
QMainWindow, #page {{ background: #f3f4f6; }}
#card {{ background: white; border: 1px solid #e5e7eb; border-radius: 12px; }}
#title {{ font-size: 20pt; font-weight: 600; color: #111827; }}
#subtitle, #hint {{ color: #6b7280; }}
#fieldLabel {{ color: #374151; font-weight: 600; }}
#fieldError, #formError {{ color: #dc2626; }}
#formNotice {{ color: #15803d; }}
QLineEdit {{
    padding: 7px 9px; border: 1px solid #d1d5db; border-radius: 6px; background: white;
    selection-background-color: {ACCENT};
}}
QLineEdit:focus {{ border: 1px solid {ACCENT}; }}
QLineEdit[invalid="true"] {{ border: 1px solid #dc2626; }}
QPushButton {{
    padding: 7px 14px; border-radius: 6px; border: 1px solid #d1d5db; background: white;
    color: #111827;
}}
QPushButton:hover {{ background: #f9fafb; }}
QPushButton:focus {{ border: 1px solid {ACCENT}; }}
QPushButton#primary {{ background: {ACCENT}; color: white; border: 1px solid {ACCENT}; font-weight: 600; }}
QPushButton#primary:hover {{ background: #4338ca; }}
QPushButton#primary:disabled {{ background: #a5b4fc; border-color: #a5b4fc; }}
QPushButton#danger {{ color: #b91c1c; }}
QPushButton#link {{ border: none; background: transparent; color: {ACCENT}; padding: 2px; }}
QPushButton#link:hover {{ text-decoration: underline; }}
#sidebar {{ background: #1e1b4b; }}
#sidebar QTreeWidget {{
    background: transparent; border: none; color: #e0e7ff; outline: none;
    show-decoration-selected: 0; selection-background-color: transparent;
}}
#sidebar QTreeWidget::item {{ padding: 5px 4px; border-radius: 6px; }}
#sidebar QTreeWidget::branch, #sidebar QTreeWidget::branch:selected {{ background: transparent; }}
#sidebar QTreeWidget::item:selected {{ background: #4338ca; color: white; }}
#sidebar QTreeWidget::item:hover:!selected {{ background: #312e81; }}
#sidebar QPushButton {{ background: #312e81; color: #e0e7ff; border: none; }}
#sidebar QPushButton:hover {{ background: #3730a3; }}
#appName {{ color: white; font-size: 14pt; font-weight: 700; }}
#header {{ background: white; border-bottom: 1px solid #e5e7eb; }}
#conversationTitle {{ font-size: 13pt; font-weight: 600; color: #111827; }}
#conversationInfo {{ color: #6b7280; }}
QTextBrowser#conversation {{ background: white; border: none; }}
#composerBar {{ background: white; border-top: 1px solid #e5e7eb; }}
#rightPane {{ background: #f9fafb; border-left: 1px solid #e5e7eb; }}
#rightPane QListWidget {{ background: transparent; border: none; outline: none; }}
#rightPane QListWidget::item {{ padding: 4px 2px; }}
#rightPane QListWidget::item:selected {{ background: #e0e7ff; color: #111827; border-radius: 4px; }}
#sectionTitle {{ color: #6b7280; font-size: 9pt; font-weight: 700; }}
QTabWidget::pane {{ border: none; }}
QTabBar::tab {{ padding: 6px 10px; background: transparent; color: #6b7280; border: none; }}
QTabBar::tab:selected {{ color: #111827; border-bottom: 2px solid {ACCENT}; }}
QStatusBar {{ background: white; border-top: 1px solid #e5e7eb; color: #374151; }}
#requestScroll, #requestScroll > QWidget, #requestRows {{ background: transparent; }}
#requestRow {{ background: white; border: 1px solid #e5e7eb; border-radius: 8px; }}
#resultRow {{ background: white; border: 1px solid #e5e7eb; border-radius: 8px; }}
#resultRow:hover, #resultRow:focus {{ border: 1px solid {ACCENT}; }}
#resultRow QLabel {{ color: #111827; }}
#sidebar QLineEdit {{ background: #312e81; color: #e0e7ff; border: 1px solid #3730a3; }}
#sidebar QLineEdit:focus {{ border: 1px solid #a5b4fc; }}
QPlainTextEdit#composer {{
    padding: 3px 4px; border: 1px solid #d1d5db; border-radius: 6px; background: white;
    selection-background-color: {ACCENT};
}}
QPlainTextEdit#composer:focus {{ border: 1px solid {ACCENT}; }}
#dialogStatus {{ font-size: 11pt; }}
"""


def dot_icon(colour, size=12):
    """A filled circle, used for presence and connection state."""
    pixmap = QPixmap(size * 2, size * 2)
    pixmap.setDevicePixelRatio(2)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor("white"), 1.5))
    painter.setBrush(QColor(colour))
    painter.drawEllipse(QRectF(1.5, 1.5, size - 3, size - 3))
    painter.end()
    return QIcon(pixmap)


def status_icon(status):
    return dot_icon(STATUS_COLOURS.get(status, STATUS_COLOURS["offline"]))


def _symbol_canvas(size, colour, pen_width):
    """A transparent, double-resolution pixmap and a painter with an antialiased pen."""
    pixmap = QPixmap(size * 2, size * 2)
    pixmap.setDevicePixelRatio(2)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor(colour), pen_width))
    return pixmap, painter


def lock_icon(colour="#c7d2fe", size=14):
    """A padlock for private channels (drawn, so it does not depend on an emoji font)."""
    pixmap, painter = _symbol_canvas(size, colour, 1.6)
    shackle = QPainterPath()
    shackle.moveTo(size * 0.32, size * 0.5)
    shackle.lineTo(size * 0.32, size * 0.33)
    shackle.arcTo(QRectF(size * 0.32, size * 0.1, size * 0.36, size * 0.42), 180, -180)
    shackle.lineTo(size * 0.68, size * 0.5)
    painter.drawPath(shackle)
    painter.setBrush(QColor(colour))
    painter.drawRoundedRect(QRectF(size * 0.2, size * 0.48, size * 0.6, size * 0.42), 2, 2)
    painter.end()
    return QIcon(pixmap)


def hash_icon(colour="#a5b4fc", size=14):
    """A '#' for public channels, the same width as the lock so names line up."""
    pixmap, painter = _symbol_canvas(size, colour, 1.5)
    for x in (0.4, 0.62):
        painter.drawLine(QPointF(size * (x + 0.05), size * 0.18),
                         QPointF(size * (x - 0.07), size * 0.86))
    for y in (0.4, 0.64):
        painter.drawLine(QPointF(size * 0.2, size * y), QPointF(size * 0.84, size * y))
    painter.end()
    return QIcon(pixmap)



def app_icon(size=64):
    """The application's icon (window, tray): a speech bubble in the accent colour."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(ACCENT))
    bubble = QPainterPath()
    bubble.addRoundedRect(QRectF(size * 0.06, size * 0.1, size * 0.88, size * 0.62), size * 0.16,
                          size * 0.16)
    tail = QPainterPath()
    tail.moveTo(size * 0.24, size * 0.6)
    tail.lineTo(size * 0.2, size * 0.9)
    tail.lineTo(size * 0.5, size * 0.66)
    painter.drawPath(bubble.united(tail))
    painter.setBrush(QColor("white"))
    for x in (0.3, 0.5, 0.7):
        painter.drawEllipse(QPointF(size * x, size * 0.41), size * 0.06, size * 0.06)
    painter.end()
    return QIcon(pixmap)
